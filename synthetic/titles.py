"""The news.tsv lines: titles, abstracts and entities drawn from the topic vocabularies."""
from __future__ import annotations

import json

import numpy as np

from synthetic.population import News
from synthetic.topics import GENERIC_WORDS, TOPICS

TITLE_MEAN_WORDS = 10.5          # before the entity and decorations
TITLE_TOPIC_SHARE = 0.65
SUBCATEGORY_WORD_SHARE = 0.25
TITLE_ENTITY_SHARE = 0.4
ABSTRACT_EMPTY_SHARE = 0.05
ABSTRACT_MEAN_WORDS = 22.0
ABSTRACT_TOPIC_SHARE = 0.55
ABSTRACT_ENTITY_SHARE = 0.3

# Share of titles given each kind of decoration (independently).
TITLE_DOUBLE_QUOTE = 0.07
TITLE_POSSESSIVE = 0.08      # half "'s", half "’s"
TITLE_AMPERSAND = 0.04
TITLE_PIPE = 0.04
TITLE_DASH = 0.04
TITLE_EMOJI = 0.01

PIPE_SUFFIXES = ("Photos", "Video", "Opinion", "Live updates")
EMOJIS = ("🔥", "😂", "😍", "🎉", "👀")


class _WordTable:
    """All words in one list, with each topic's and subcategory's word range, so word choices
    for every title can be drawn as one integer matrix."""

    def __init__(self):
        self.words: list[str] = list(GENERIC_WORDS)
        self.generic = (0, len(GENERIC_WORDS))
        self.common, self.sub = [], []
        for topic in TOPICS:
            self.common.append(self._add(topic.common))
            self.sub.append([self._add(words) for words in topic.subcategories.values()])

    def _add(self, words) -> tuple[int, int]:
        start = len(self.words)
        self.words.extend(words)
        return start, len(words)

    def draw(self, topic, subcategory, width, topic_share, rng):
        """(n, width) word indices: topic words with probability topic_share (of which
        subcategory words with probability SUBCATEGORY_WORD_SHARE), else generic words."""
        n = len(topic)
        com = np.array(self.common)[topic]
        sub_start = np.array([self.sub[t][s][0] for t, s in zip(topic.tolist(),
                                                                 subcategory.tolist())])
        sub_len = np.array([self.sub[t][s][1] for t, s in zip(topic.tolist(),
                                                              subcategory.tolist())])
        u = rng.random((n, width))
        is_topic = rng.random((n, width)) < topic_share
        from_sub = rng.random((n, width)) < SUBCATEGORY_WORD_SHARE
        start = np.where(from_sub, sub_start[:, None], com[:, 0:1])
        length = np.where(from_sub, sub_len[:, None], com[:, 1:2])
        start = np.where(is_topic, start, self.generic[0])
        length = np.where(is_topic, length, self.generic[1])
        return (start + np.floor(u * length)).astype(np.int64)


def _entity_json(entity_id: str, surface: str, kind: str, text: str, confidence: float) -> str:
    if entity_id is None:
        return "[]"
    return json.dumps([{"Label": surface, "Type": kind, "WikidataId": entity_id,
                        "Confidence": confidence, "OccurrenceOffsets": [text.find(surface)],
                        "SurfaceForms": [surface]}], ensure_ascii=False)


def _capitalize(text: str) -> str:
    for k, ch in enumerate(text):
        if ch.isalpha():
            return text[:k] + ch.upper() + text[k + 1:]
    return text


def _distinct(word_ids: list[int], n: int) -> list[int]:
    """The first n distinct ids (fewer if there are not that many)."""
    seen, out = set(), []
    for w in word_ids:
        if w not in seen:
            seen.add(w)
            out.append(w)
            if len(out) == n:
                break
    return out


def _decorate_title(words: list[str], flags, picks) -> list[str]:
    """Apply the title decorations (possessive, &, em dash, double quotes) to a word list;
    picks[0:4] place them, picks[4] chooses the apostrophe."""
    possessive, ampersand, dash, dquote = flags
    k = [int(p * len(words)) for p in picks[:4]]
    if possessive and words:
        words[k[0]] += "'s" if picks[4] < 0.5 else "’s"
    if ampersand and len(words) > 2:
        words.insert(max(1, k[1]), "&")
    if dash and len(words) > 3:
        words.insert(max(2, k[2]), "—")
    if dquote and len(words) > 2:
        i = min(k[3], len(words) - 2)
        words[i] = '"' + words[i]
        words[i + 1] = words[i + 1] + '"'
    return words


def make_texts(news: News, rng: np.random.Generator) -> list[str]:
    """The news.tsv line (without the newline) of every news item."""
    n = len(news.ids)
    table = _WordTable()
    title_len = np.clip(rng.poisson(TITLE_MEAN_WORDS - 1, size=n) + 1, 4, 24)
    title_words = table.draw(news.topic, news.subcategory, 24, TITLE_TOPIC_SHARE, rng)
    abstract_len = np.clip(rng.poisson(ABSTRACT_MEAN_WORDS - 1, size=n) + 1, 6, 48)
    abstract_words = table.draw(news.topic, news.subcategory, 48, ABSTRACT_TOPIC_SHARE, rng)
    abstract_empty = rng.random(n) < ABSTRACT_EMPTY_SHARE
    title_entity = rng.random(n) < TITLE_ENTITY_SHARE
    abstract_entity = rng.random(n) < ABSTRACT_ENTITY_SHARE
    entity_pick = rng.random((n, 4))   # which entity, where in title, where in abstract
    confidence = np.round(0.6 + 0.4 * rng.random((n, 2)), 3)
    flags = rng.random((n, 6)) < np.array([TITLE_POSSESSIVE, TITLE_AMPERSAND, TITLE_DASH,
                                           TITLE_DOUBLE_QUOTE, TITLE_PIPE, TITLE_EMOJI])
    picks = rng.random((n, 7))   # 0-4: _decorate_title, 5: pipe suffix, 6: emoji
    url_codes = rng.integers(0, 36 ** 5, size=n)

    entity_ids = {}
    for t, topic in enumerate(TOPICS):
        for e, _ in enumerate(topic.entities):
            entity_ids[(t, e)] = f"Q{90_000_000 + 100 * t + e}"
    subcat_names = [list(topic.subcategories) for topic in TOPICS]
    words = table.words
    lines = []
    for i in range(n):
        t = int(news.topic[i])
        topic = TOPICS[t]
        e = int(entity_pick[i, 0] * len(topic.entities))
        surface, kind = topic.entities[e]

        title = [words[w] for w in _distinct(title_words[i].tolist(), title_len[i])]
        title = _decorate_title(title, flags[i, :4], picks[i, :5].tolist())
        title_eid = None
        if title_entity[i]:
            title.insert(int(entity_pick[i, 1] * (len(title) + 1)), surface)
            title_eid = entity_ids[(t, e)]
        text = _capitalize(" ".join(title))
        if flags[i, 4]:
            text += " | " + PIPE_SUFFIXES[int(picks[i, 5] * len(PIPE_SUFFIXES))]
        if flags[i, 5]:
            text += " " + EMOJIS[int(picks[i, 6] * len(EMOJIS))]

        abstract, abstract_eid = "", None
        if not abstract_empty[i]:
            body = [words[w] for w in _distinct(abstract_words[i].tolist(), abstract_len[i])]
            if abstract_entity[i]:
                body.insert(int(entity_pick[i, 2] * (len(body) + 1)), surface)
                abstract_eid = entity_ids[(t, e)]
            abstract = _capitalize(" ".join(body)) + "."

        sub = subcat_names[t][int(news.subcategory[i])]
        url = f"https://www.example.com/mind/AA{np.base_repr(int(url_codes[i]), 36):0>5}.html"
        fields = [news.ids[i], topic.name, sub, text, abstract, url,
                  _entity_json(title_eid, surface, kind, text, float(confidence[i, 0])),
                  _entity_json(abstract_eid, surface, kind, abstract, float(confidence[i, 1]))]
        lines.append("\t".join(fields))
    return lines
