"""Synthetic samples in MIND's exact file format, with a planted click model.

    python -m synthetic --scale {tiny,small,mind-small} --out DIR [--seed N] [--daily-log]

writes

    DIR/MINDsmall_train/{behaviors.tsv,news.tsv}
    DIR/MINDsmall_dev/{behaviors.tsv,news.tsv}
    DIR/ground_truth/{train.tsv,dev.tsv}     header: impression_id, news_id, click_prob

(with `--daily-log`, also the same impressions as a log partitioned by day, DIR/log/, see
`synthetic.writer.write_daily_log`) and prints a JSON summary. The format is MIND's as
distributed (no header in the MIND files, tab separated, UTF-8, '\\n' line ends). The same seed
gives byte-identical files.

The planted model
-----------------
The names below live in the module of their part: `synthetic.topics` (TOPICS),
`synthetic.population` (news, users, the click logit), `synthetic.impressions` (impressions,
their noise and labels), `synthetic.histories` and `synthetic.titles`.

News. Each news item has a topic (one of the 15 MIND-like categories in `TOPICS`, drawn with
the shares `Topic.share`), a subcategory (uniform within the topic), a popularity
`pop ~ LogNormal(0, POPULARITY_SIGMA)`, a publication time and a lifetime. A title has on
average `TITLE_MEAN_WORDS` words before its entity and decorations: `TITLE_TOPIC_SHARE` of them
from the topic's vocabulary (a word of the subcategory with probability
`SUBCATEGORY_WORD_SHARE`, else a word common to the topic), the rest from a shared generic
vocabulary, sometimes a named entity of the topic. Same-topic titles therefore share most of
their content words, so a real text encoder puts them near each other. Entities, people and
places are fictional; their WikidataIds are made up.

Users. Interest `theta_u` over topics (sums to 1): 1 to 3 dominant topics (probabilities
`DOMINANT_TOPIC_COUNTS`, chosen with weight share**0.7) holding `DOMINANT_MASS` of the mass,
split by a Dirichlet(1.5); the rest spread by a sparse Dirichlet(0.2) over all topics.
Each user also has a click propensity `eps_u ~ N(0, USER_NOISE_SD)`.

Clicks. A candidate `n` shown to user `u` in impression `i` is clicked with probability

    p = sigmoid(CLICK_BIAS + AFFINITY_WEIGHT * theta_u[topic(n)]
                + POPULARITY_WEIGHT * log(pop_n) + eps_u + eps_i)
    eps_i ~ N(0, IMPRESSION_NOISE_SD)

This `p` is what ground_truth/*.tsv holds. Labels are Bernoulli(p), except that an impression
with no click has its labels drawn again (as in MIND, every impression has a click; sampled
exactly from that conditional law, see `draw_labels`); the ground truth still holds the
unconditional `p`. CLICK_BIAS puts the clicks near MIND's rates (about 4% of candidates, 1.5
per impression). Ranking each impression by the true p gives the ceiling AUC any model can
reach on the sample, reported in the summary as `planted_auc`.

Impressions. Every user has at least one impression; the others go to users in proportion
to an activity ~ LogNormal(0, ACTIVITY_SIGMA). Train times fall in 11/9/2019-11/14/2019, dev
times on 11/15/2019, with a daily rhythm (`HOURLY_RHYTHM`). The number of candidates is
LogNormal with mean `MEAN_CANDIDATES`, drawn without replacement, in proportion to popularity,
among the news alive at the impression's hour (published before it, lifetime not over), then
shuffled. Later days show newer news, and the dev day shows news that train never shows.

Histories. The clicks of a user during the four weeks before the data period (news published
before 11/9/2019), drawn from the same model: a history news is a popularity-weighted shown
news that the user clicked, so P(n) is proportional to pop_n * p(u, n) (with eps_i = 0;
computed over cells of topic x popularity decile). Lengths are LogNormal (mean about
`HISTORY_MEAN`, heavy tailed), with `EMPTY_HISTORY_SHARE` of users having none; ordered
oldest first. A user's history string is the same in every impression of both splits, as in
MIND, whose histories come from the weeks before the impression logs.
"""
