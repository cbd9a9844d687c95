"""cntem: VGG16 hypercolumns + VLAD + gradient boosting for TEM images of carbon nanomaterials."""
import logging
import sys

__version__ = "0.1.0"


def log_to(path=None, level=logging.INFO):
    """Send this process's log records to `path` (a rule's log file) and to stderr."""
    handlers = [logging.StreamHandler(sys.stderr)]
    if path:
        handlers.append(logging.FileHandler(str(path), mode="w"))
    logging.basicConfig(level=level, handlers=handlers, force=True,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    return logging.getLogger("cntem")
