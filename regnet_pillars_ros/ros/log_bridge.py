"""The package's Python `logging` records -> a ROS logger, so they reach the console, the ROS
log files and /rosout like the node's own messages."""
from __future__ import annotations

import logging

PACKAGE = __name__.split(".")[0]


class RosLogHandler(logging.Handler):
    """Forwards each record to an rclpy logger at the matching severity, named by its module."""

    def __init__(self, ros_logger) -> None:
        super().__init__()
        self._ros = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"[{record.name.removeprefix(PACKAGE + '.')}] {record.getMessage()}"
            if record.levelno >= logging.ERROR:
                self._ros.error(text)
            elif record.levelno >= logging.WARNING:
                self._ros.warning(text)
            elif record.levelno >= logging.INFO:
                self._ros.info(text)
            else:
                self._ros.debug(text)
        except Exception:  # logging must never break the caller
            self.handleError(record)


def route_package_logs(ros_logger) -> RosLogHandler:
    """Send the package's records (INFO and above) to ``ros_logger`` instead of Python's
    handlers; returns the handler for `unroute_package_logs`."""
    logger = logging.getLogger(PACKAGE)
    handler = RosLogHandler(ros_logger)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return handler


def unroute_package_logs(handler: RosLogHandler) -> None:
    logger = logging.getLogger(PACKAGE)
    logger.removeHandler(handler)
    logger.propagate = True
