"""cntem: VGG16 hypercolumns + VLAD + gradient boosting for TEM images of carbon nanomaterials."""
import errno
import logging
import sys

__version__ = "0.1.0"
# Where downloaded and converted VGG16 weights are kept (config key weights_cache, cntem --weights-cache).
WEIGHTS_CACHE = "~/.cache/cntem"


class ActionableError(Exception):
    """An expected failure (bad input, config, weights or disk) whose message says what to change.

    Rule scripts and the console command show it as one message, without a traceback.
    """


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` is a write that found no space left (h5py's errors carry the reason in their text only)."""
    return isinstance(exc, OSError) and (exc.errno == errno.ENOSPC or "No space left on device" in str(exc))


def log_to(path=None, level=logging.INFO):
    """Send this process's log records (and Python warnings) to `path` and to stderr."""
    handlers = [logging.StreamHandler(sys.stderr)]
    if path:
        handlers.append(logging.FileHandler(str(path), mode="w"))
    logging.basicConfig(level=level, handlers=handlers, force=True,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.captureWarnings(True)
    # faiss.loader logs each CPU-specific library it tries and fails to load (ModuleNotFoundError) at INFO;
    # tifffile logs errors about a damaged file's tags without naming it, beside cntem's message that names it
    logging.getLogger("faiss").setLevel(logging.WARNING)
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    return logging.getLogger("cntem")


def rule_log(path):
    """Logging for a rule script: messages, warnings and any uncaught error go to the rule's log.

    An ActionableError is logged as its message alone, and so is a full disk (with what to do); anything else
    with its traceback (a bug). Either way the job then exits non-zero and Snakemake points at the log.
    """
    log = log_to(path)

    def log_uncaught(exc_type, exc, tb):
        if issubclass(exc_type, ActionableError):
            log.error("%s", exc)
        elif is_disk_full(exc):
            log.error("the disk is full (%s): free space on the file system of results/, then run the same command "
                      "again; finished jobs are kept", exc)
        else:
            log.error("unexpected error (please report it with this log)", exc_info=(exc_type, exc, tb))

    sys.excepthook = log_uncaught
    return log
