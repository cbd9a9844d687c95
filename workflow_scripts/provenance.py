"""Rule provenance: the package versions and the resolved config the results were made with."""
import platform
from importlib.metadata import PackageNotFoundError, version

import yaml

from cntem.io import write_table

rows = [{"package": "python", "version": platform.python_version()}]
for name in ["cntem", "snakemake", "torch", "torchvision", "faiss-cpu", "faiss-gpu-cu12", "xgboost", "numpy",
             "h5py", "matplotlib", "scikit-learn", "scipy", "pillow", "tifffile"]:
    try:
        rows.append({"package": name, "version": version(name)})
    except PackageNotFoundError:
        continue
write_table(snakemake.output.versions, rows, ["package", "version"])
with open(snakemake.output.config, "w") as fh:
    yaml.safe_dump(dict(snakemake.params.config), fh, sort_keys=False)
