"""Rule fit_dictionary: K-means dictionary on one fold's training hypercolumns."""
import faiss

from cntem import rule_log
from cntem.dictionary import build_dictionary
from cntem.folds import fold_entries
from cntem.io import read_table
from cntem.shards import HypercolumnStore

log = rule_log(snakemake.log[0])
faiss.omp_set_num_threads(snakemake.threads)
train = fold_entries(read_table(snakemake.input.plan), snakemake.wildcards.fold)["train"]
with HypercolumnStore(snakemake.input.shards) as store:
    dictionary = build_dictionary(store, [(r["id"], r["rotation"]) for r in train], int(snakemake.wildcards.k),
                                  snakemake.params.dictionary, snakemake.params.pca, snakemake.config["device"],
                                  progress=True)
dictionary.save(snakemake.output.dictionary)
log.info("K=%d dictionary from %d vectors of %d training entries (faiss GPU: %s), objective %.4g",
         dictionary.k, dictionary.meta["n_vectors"], len(train), dictionary.meta["faiss_gpu"],
         dictionary.meta["objective"])
