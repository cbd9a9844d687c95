"""Rule software_versions: the versions of every package the results depend on."""
from importlib.metadata import PackageNotFoundError, version
import platform

from cntem.io import write_table

rows = [{"package": "python", "version": platform.python_version()}]
for name in ["cntem", "snakemake", "torch", "torchvision", "faiss-cpu", "faiss-gpu-cu12", "xgboost", "numpy",
             "h5py", "matplotlib", "scikit-learn", "scipy", "pillow", "tifffile"]:
    try:
        rows.append({"package": name, "version": version(name)})
    except PackageNotFoundError:
        continue
write_table(snakemake.output[0], rows, ["package", "version"])
