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
(``BACKGROUND``, or the texts ``train`` is given) is trained alongside: an
unrelated reply's probability goes there, and no script class reaches the
threshold. It is never returned.

``predict(text)`` scores one reply without going through
scikit-learn's per-call input checks (about 0.3 ms for one string): the
reply's n-grams are looked up in the fitted vocabulary, weighted by the
fitted IDF, L2-normalised, and multiplied by the fitted coefficients — the
same arithmetic as ``predict_proba``, in some tens of microseconds.
``nearest(prediction, label)`` names the training sample of a class closest
to the reply (cosine), for the transcript.

What it is not: the policy of when the model is asked or believed — that is
``waihu_nlu.trained``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import attrs
import numpy as np

from waihu_nlu.background import EVERYDAY

__all__ = ["BACKGROUND", "REGULARISATION", "IntentModel", "Prediction"]

NGRAM_RANGE = (1, 3)  # character n-grams: single characters up to three-character words
# Inverse regularisation strength of the logistic regression. Samples are few
# and short (a keyword is 2–4 characters), so a weak penalty lets one telling
# n-gram carry a reply; chosen with the threshold on the paraphrase test set
# (tests/test_nlu_trained.py): 3 loses paraphrases below any threshold that
# keeps unrelated replies out, 10–30 keeps them all.
REGULARISATION = 30.0

# Everyday sentences that answer nothing a call asks: the background class, these
# lines about the call's surroundings plus the ``EVERYDAY`` talk of
# ``waihu_nlu.background`` (weather, food, family, traffic, work, shopping,
# health, half-sentences, asking to hold…). With these lines alone, 22 of 64
# off-topic replies written to measure it went to a class on the templates
# (油价又涨了 → kb.price, 外面好大的风 → affirm); with both, 10, six of them by
# rules — the evaluation set and 62 paraphrases unchanged or better.
# Written for this purpose; none is a reply any script class should take. The
# greetings are there because a callee's first words are often just that, and
# 你好 shares 你 with every "你说说看" of a yes; the household lines use 打, 没,
# 别, 不, 要, 是, 有 in their everyday senses, so those characters alone do not
# carry a reply to "do not call" or "no". The last lines are a callee talking
# to someone in the room (a child, a partner) while the call is open: on a
# 13-class script such replies scored up to 0.12 for some class without them,
# 0.09 with them, well under the threshold.
_CALL_SIDE = tuple(
    """
    我在外面吃饭 孩子今天放学早 明天可能会下雨 这个周末去爬山 路上有点堵车 我刚到家 电视机坏了
    早上喝了一杯咖啡 老家那边挺冷的 他们公司在城东 我妈身体还行 周末要加班 水果店关门了
    小区里在装修 车停在楼下 昨天看了一场电影 手机快没电了 这边信号不太好 刚下班 超市人很多
    饭还没做好 今年春节回老家 学校明天开学 天气预报说有雪 猫跑出去了 朋友约我喝茶 我在排队
    公交车来了 等一下我找找 外面风很大 我儿子在写作业 快递到了 中午吃的面条 狗在叫 隔壁在吵架
    菜市场的菜涨价了 地铁站很远 我们单位放假了 这几天太热了 空调开着呢 奶奶在睡觉 老师打电话来了
    钥匙找不到了 楼上漏水 电梯坏了 晚上去散步 衣服还没干 火车票买好了 冰箱里没东西 医院人太多
    球赛开始了 刚洗完澡 水开了 门口有人 今天星期几 几点了 外卖到了 路灯不亮 河边人挺多
    你好 您好 喂你好 你好你好
    他在打篮球 我打个车过去 碗打碎了 周末打扫卫生 孩子去打疫苗了 楼下在打麻将 水还没烧开 作业写完没
    衣服晾了没 别跑那么快 别把水洒了 宝宝别动那个 不早了该睡了 这菜不咸 我要去做饭了 他是我同学
    今天有雨 这个挺好吃 灯没关 门别锁 妈妈在做饭 孩子在哭 锅里还有汤 我去接孩子放学 老公在洗碗
    乖别闹了 宝贝快睡觉 把鞋穿上 你先去洗手 爸爸在跟人说话 快把玩具收起来 狗把花盆碰倒了
    碗都摔了 小心烫 吃饭了没 你饭吃了吗 喝水了没 衣服穿好 你去问你爸 别吵我在说事 妈给你买糖
    猫在沙发上睡觉 鱼缸该换水了 窗户没关好 这个放哪儿 钥匙在桌子上 哭什么哭 谁在敲门 去把电视关了
    给奶奶打个电话 饭菜都凉了 今天菜有点咸 下午去趟银行 明天早上送孩子 作业还没写完 快去刷牙
    """.split()
)
BACKGROUND = _CALL_SIDE + EVERYDAY
_BACKGROUND_LABEL = ""  # no class of a script has an empty name
MAX_ITERATIONS = 2000  # lbfgs converges in a few hundred on scripts of 2,000 keywords
RANDOM_STATE = 0  # determinism: the same samples always give the same model


@attrs.frozen
class Prediction:
    """The model's view of one text: class probabilities and the text's TF-IDF vector."""

    probabilities: dict[str, float]  # script classes only, in the model's label order
    vector: dict[int, float]  # column of each known n-gram → its L2-normalised TF-IDF weight


class IntentModel:
    """A fitted model; build it with ``train``."""

    def __init__(
        self,
        *,
        vocabulary: dict[str, int],
        idf: Sequence[float],
        weights: np.ndarray,
        intercept: np.ndarray,
        labels: tuple[str, ...],
        samples: Sequence[tuple[str, str, dict[int, float]]],
        reference: Callable[[str], np.ndarray],
    ) -> None:
        self._vocabulary = vocabulary
        self._idf = idf
        self._weights = weights  # features × classes
        self._intercept = intercept
        self._labels = labels  # as the regression orders them, background included
        self.labels = tuple(label for label in labels if label != _BACKGROUND_LABEL)
        # for ``nearest``: per class, column → [(sample text, its weight there)]
        self._postings: dict[str, dict[int, list[tuple[str, float]]]] = {}
        for text, label, vector in samples:
            postings = self._postings.setdefault(label, {})
            for column, weight in vector.items():
                postings.setdefault(column, []).append((text, weight))
        self._reference = reference

    @classmethod
    def train(
        cls, samples: Sequence[tuple[str, str]], background: Sequence[str] = BACKGROUND
    ) -> IntentModel | None:
        """A model of (text, label) ``samples`` and the ``background`` class's texts (by
        default ``BACKGROUND``); None with fewer than two labels.

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
        texts = [text for text, _ in samples] + list(background)
        matrix = vectorizer.fit_transform(texts).tocsr()
        targets = [label for _, label in samples] + [_BACKGROUND_LABEL] * len(background)
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
        rows = [
            dict(
                zip(
                    matrix.indices[matrix.indptr[i] : matrix.indptr[i + 1]].tolist(),
                    matrix.data[matrix.indptr[i] : matrix.indptr[i + 1]].tolist(),
                    strict=True,
                )
            )
            for i in range(len(samples))
        ]
        return cls(
            vocabulary={str(k): int(v) for k, v in vectorizer.vocabulary_.items()},
            idf=vectorizer.idf_.tolist(),
            weights=np.ascontiguousarray(model.coef_.T, dtype=np.float64),
            intercept=np.asarray(model.intercept_, dtype=np.float64),
            labels=tuple(str(c) for c in model.classes_),
            samples=[(t, lb, row) for (t, lb), row in zip(samples, rows, strict=True)],
            reference=lambda text: model.predict_proba(vectorizer.transform([text]))[0],
        )

    def predict(self, text: str) -> Prediction | None:
        """Each class's probability for ``text`` (the background's share left out, so they sum
        to 1 or less); None when no n-gram of it was seen in training."""
        vector = self._vector(text)
        if vector is None:
            return None
        logits = np.array(list(vector.values())) @ self._weights[list(vector)] + self._intercept
        # softmax: there are always three classes or more (two of the script's and the
        # background), so scikit-learn's one-logit form for two never arises
        shifted = np.exp(logits - logits.max())
        probs = (shifted / shifted.sum()).tolist()
        probabilities = {
            label: p
            for label, p in zip(self._labels, probs, strict=True)
            if label != _BACKGROUND_LABEL
        }
        return Prediction(probabilities, vector)

    def probabilities(self, text: str) -> dict[str, float] | None:
        """``predict(text).probabilities``, or None."""
        prediction = self.predict(text)
        return None if prediction is None else prediction.probabilities

    def reference_probabilities(self, text: str) -> dict[str, float]:
        """What scikit-learn's own ``predict_proba`` gives ``text`` (slow): the yardstick
        ``probabilities`` is held to."""
        probs = self._reference(text)
        return {
            label: float(p)
            for label, p in zip(self._labels, probs, strict=True)
            if label != _BACKGROUND_LABEL
        }

    def nearest(self, prediction: Prediction, label: str) -> str:
        """The training sample of ``label`` most like the predicted text (cosine); empty when
        none shares an n-gram with it. Ties go to the sample met first (by the reply's n-grams)."""
        postings = self._postings.get(label, {})
        similarity: dict[str, float] = {}
        for column, value in prediction.vector.items():
            for text, weight in postings.get(column, ()):
                similarity[text] = similarity.get(text, 0.0) + value * weight
        if not similarity:
            return ""
        return max(similarity, key=similarity.__getitem__)

    def _vector(self, text: str) -> dict[int, float] | None:
        """The TF-IDF vector of ``text`` (column → L2-normalised weight), as scikit-learn's."""
        counts: dict[int, int] = {}
        vocabulary = self._vocabulary
        for gram in _char_ngrams(text):
            column = vocabulary.get(gram)
            if column is not None:
                counts[column] = counts.get(column, 0) + 1
        if not counts:
            return None
        idf = self._idf
        weights = {c: (1.0 + math.log(n)) * idf[c] for c, n in counts.items()}  # sublinear tf
        norm = math.sqrt(sum(w * w for w in weights.values()))
        return {c: w / norm for c, w in weights.items()}


_WHITE_SPACES = re.compile(r"\s\s+")  # as scikit-learn's vectoriser folds them


def _char_ngrams(text: str) -> list[str]:
    """The n-grams scikit-learn's ``analyzer="char"`` takes from ``text`` (NGRAM_RANGE, no
    lower-casing): its own function goes through three layers of calls per text."""
    text = _WHITE_SPACES.sub(" ", text)
    low, high = NGRAM_RANGE
    grams = list(text) if low == 1 else []
    for n in range(max(low, 2), min(high, len(text)) + 1):
        grams.extend(text[i : i + n] for i in range(len(text) - n + 1))
    return grams
