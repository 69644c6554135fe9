"""Column names used across the project, in one place.

Every job, the trainer, the evaluator and the tests refer to columns through these
constants, so a rename happens here once.
"""

IMPRESSION_ID = "impression_id"
USER_ID = "user_id"
NEWS_ID = "news_id"
LABEL = "label"
USER_VEC = "user_vec"
NEWS_VEC = "news_vec"
HISTORY_LEN = "history_len"
TIME = "time"
VECTOR = "vector"
CLICK_PROB = "click_prob"
CLICKED_NEWS = "clicked_news"
VECTOR_SUM = "vector_sum"
IMPRESSIONS = "impressions"
CLICKS = "clicks"
CANDIDATES = "candidates"
SCORE = "score"
RANK = "rank"
MODEL_VERSION = "model_version"
SCORED_AT = "scored_at"
RUN_DATE = "run_date"
