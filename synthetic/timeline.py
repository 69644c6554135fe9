"""The sample's time line: the history weeks, the train days, the dev day. Times are counted
in seconds from HISTORY_START."""
from __future__ import annotations

from datetime import datetime

HISTORY_START = datetime(2019, 10, 12)
TRAIN_START = datetime(2019, 11, 9)
DEV_START = datetime(2019, 11, 15)
DEV_END = datetime(2019, 11, 16)
DAY = 86_400
HOUR = 3_600


def seconds(moment: datetime) -> float:
    return (moment - HISTORY_START).total_seconds()
