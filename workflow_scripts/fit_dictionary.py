"""Rule fit_dictionary: the visual dictionary of one fold, fitted on its training hypercolumns only."""
import faiss

from cntem import rule_log
from cntem.config import make_dictionary
from cntem.folds import entry_keys, fold_entries
from cntem.io import read_table
from cntem.shards import HypercolumnStore

log = rule_log(snakemake.log[0])
faiss.omp_set_num_threads(snakemake.threads)
train = fold_entries(read_table(snakemake.input.plan), snakemake.wildcards.fold)["train"]
dictionary = make_dictionary(snakemake.params.k, snakemake.params.dictionary, snakemake.params.pca,
                             snakemake.config["device"])
with HypercolumnStore(snakemake.input.shards) as store:
    dictionary.fit(store, entry_keys(train), progress=True)
    log.info("read %.0f MB of the %.0f MB of shards (%.1f%% of the shard bytes)", store.bytes_read / 1e6,
             store.total_bytes() / 1e6, 100 * store.bytes_read / store.total_bytes())
dictionary.save(snakemake.output.dictionary)
log.info("K=%d dictionary from %d vectors of %d training entries (faiss GPU: %s), objective %.4g",
         dictionary.k, dictionary.n_vectors_, len(train), dictionary.faiss_gpu_, dictionary.objective_)
