"""A small trained model of a script's classes: character n-grams and logistic regression.

``IntentModel.train(samples)`` fits, from (text, class) pairs — a script's
examples and keywords, normalised as replies are — a TF-IDF vectoriser over
character 1–3-grams (scikit-learn ``analyzer="char"``, sublinear term
frequency) and a multinomial logistic regression (lbfgs, classes weighted
by their share of samples, fixed ``random_state``: the same script always
gives the same model). Character n-grams suit Chinese, which has no spaces
between words: 早都办过了 shares 办过, 过了 with 已经办过了.

A script only says what its classes are, not what replies belong to none of
them; trained on its samples alone, the model gives an unrelated reply
("今天天气不错") to some class at odds much like a real paraphrase's. So a
background class of everyday sentences unrelated to any call
(``BACKGROUND``) is trained alongside: an unrelated reply's probability goes
there, and no script class reaches the threshold. It is never returned.

``probabilities(text)`` scores one reply without going through
scikit-learn's per-call input checks (about 0.3 ms for one string): the
reply's n-grams are looked up in the fitted vocabulary, weighted by the
fitted IDF, L2-normalised, and multiplied by the fitted coefficients — the
same arithmetic as ``predict_proba``, in some tens of microseconds.
``nearest(text, label)`` names the training sample of a class closest to the
reply (cosine), for the transcript.

What it is not: the policy of when the model is asked or believed — that is
``waihu_nlu.trained``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse

__all__ = ["BACKGROUND", "REGULARISATION", "IntentModel"]

NGRAM_RANGE = (1, 3)  # character n-grams: single characters up to three-character words
# Inverse regularisation strength of the logistic regression. Samples are few
# and short (a keyword is 2–4 characters), so a weak penalty lets one telling
# n-gram carry a reply; chosen with the threshold on the paraphrase test set
# (tests/test_nlu_trained.py): 3 loses paraphrases below any threshold that
# keeps unrelated replies out, 10–30 keeps them all.
REGULARISATION = 30.0

# Everyday sentences that answer nothing a call asks: the background class.
# Written for this purpose; none is a reply any script class should take.
BACKGROUND = tuple(
    """
    我在外面吃饭 孩子今天放学早 明天可能会下雨 这个周末去爬山 路上有点堵车 我刚到家 电视机坏了
    早上喝了一杯咖啡 老家那边挺冷的 他们公司在城东 我妈身体还行 周末要加班 水果店关门了
    小区里在装修 车停在楼下 昨天看了一场电影 手机快没电了 这边信号不太好 刚下班 超市人很多
    饭还没做好 今年春节回老家 学校明天开学 天气预报说有雪 猫跑出去了 朋友约我喝茶 我在排队
    公交车来了 等一下我找找 外面风很大 我儿子在写作业 快递到了 中午吃的面条 狗在叫 隔壁在吵架
    菜市场的菜涨价了 地铁站很远 我们单位放假了 这几天太热了 空调开着呢 奶奶在睡觉 老师打电话来了
    钥匙找不到了 楼上漏水 电梯坏了 晚上去散步 衣服还没干 火车票买好了 冰箱里没东西 医院人太多
    球赛开始了 刚洗完澡 水开了 门口有人 今天星期几 几点了 外卖到了 路灯不亮 河边人挺多
    """.split()
)
_BACKGROUND_LABEL = ""  # no class of a script has an empty name
MAX_ITERATIONS = 2000  # lbfgs converges in a few hundred on scripts of 2,000 keywords
RANDOM_STATE = 0  # determinism: the same samples always give the same model


class IntentModel:
    """A fitted model; build it with ``train``."""

    def __init__(
        self,
        *,
        analyzer: Callable[[str], list[str]],
        vocabulary: dict[str, int],
        idf: np.ndarray,
        weights: np.ndarray,
        intercept: np.ndarray,
        labels: tuple[str, ...],  # as the regression orders them
        samples: scipy.sparse.csc_matrix,
        sample_labels: np.ndarray,
        sample_texts: tuple[str, ...],
        reference: Callable[[str], np.ndarray],
    ) -> None:
        self._analyzer = analyzer
        self._vocabulary = vocabulary
        self._idf = idf
        self._weights = weights  # features × classes (× 1 for two classes)
        self._intercept = intercept
        self._labels = labels  # the model's classes, background included
        self.labels = tuple(label for label in labels if label != _BACKGROUND_LABEL)
        self._samples = samples
        self._sample_labels = sample_labels
        self._sample_texts = sample_texts
        self._reference = reference

    @classmethod
    def train(cls, samples: Sequence[tuple[str, str]]) -> IntentModel | None:
        """A model of (text, label) ``samples``; None with fewer than two labels.

        Blocking CPU work (up to about a second for 2,000 samples): run it in
        a worker thread.
        """
        if len({label for _, label in samples}) < 2:
            return None
        # imported here: scikit-learn takes about a second to import, which every
        # waihuctl command would pay if the plugin imported it at load
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from threadpoolctl import threadpool_limits

        vectorizer = TfidfVectorizer(
            analyzer="char", ngram_range=NGRAM_RANGE, lowercase=False, sublinear_tf=True
        )
        texts = [text for text, _ in samples] + list(BACKGROUND)
        matrix = vectorizer.fit_transform(texts)
        targets = [label for _, label in samples] + [_BACKGROUND_LABEL] * len(BACKGROUND)
        model = LogisticRegression(
            C=REGULARISATION,
            class_weight="balanced",  # a class of 40 keywords must not outweigh one of 3
            max_iter=MAX_ITERATIONS,
            random_state=RANDOM_STATE,
        )
        # One BLAS thread: the problem is small, and threads contending with the
        # daemon's (and each other's, on a busy host) made a 0.2 s fit take 4 s.
        with threadpool_limits(limits=1):
            model.fit(matrix, targets)
        return cls(
            analyzer=vectorizer.build_analyzer(),
            vocabulary={str(k): int(v) for k, v in vectorizer.vocabulary_.items()},
            idf=np.asarray(vectorizer.idf_, dtype=np.float64),
            weights=np.ascontiguousarray(model.coef_.T, dtype=np.float64),
            intercept=np.asarray(model.intercept_, dtype=np.float64),
            labels=tuple(str(c) for c in model.classes_),
            samples=scipy.sparse.csc_matrix(matrix),
            sample_labels=np.asarray(targets),
            sample_texts=tuple(texts),
            reference=lambda text: model.predict_proba(vectorizer.transform([text]))[0],
        )

    def probabilities(self, text: str) -> dict[str, float] | None:
        """Each class's probability for ``text`` (the background's share left out, so they sum
        to 1 or less); None when no n-gram of it was seen in training."""
        vector = self._vector(text)
        if vector is None:
            return None
        columns, values = vector
        logits = values @ self._weights[columns] + self._intercept
        if len(self._labels) == 2:
            # scikit-learn fits one logit for two classes: P(second) = sigmoid(z)
            second = 1.0 / (1.0 + np.exp(-logits[0]))
            probs = np.array([1.0 - second, second])
        else:
            shifted = np.exp(logits - logits.max())
            probs = shifted / shifted.sum()
        return {
            label: float(p)
            for label, p in zip(self._labels, probs, strict=True)
            if label != _BACKGROUND_LABEL
        }

    def reference_probabilities(self, text: str) -> dict[str, float]:
        """What scikit-learn's own ``predict_proba`` gives ``text`` (slow): the yardstick
        ``probabilities`` is held to."""
        probs = self._reference(text)
        return {
            label: float(p)
            for label, p in zip(self._labels, probs, strict=True)
            if label != _BACKGROUND_LABEL
        }

    def nearest(self, text: str, label: str) -> str:
        """The training sample of ``label`` most like ``text`` (cosine); empty when none is."""
        vector = self._vector(text)
        if vector is None:
            return ""
        columns, values = vector
        similarity = self._samples[:, columns] @ values
        similarity = np.where(self._sample_labels == label, similarity, -1.0)
        best = int(np.argmax(similarity))
        return self._sample_texts[best] if similarity[best] > 0 else ""

    def _vector(self, text: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The TF-IDF vector of ``text`` as (columns, L2-normalised values)."""
        counts: dict[int, int] = {}
        for gram in self._analyzer(text):
            column = self._vocabulary.get(gram)
            if column is not None:
                counts[column] = counts.get(column, 0) + 1
        if not counts:
            return None
        columns = np.fromiter(counts, dtype=np.intp, count=len(counts))
        values = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        values = (1.0 + np.log(values)) * self._idf[columns]  # sublinear_tf=True
        values /= np.linalg.norm(values)
        return columns, values
