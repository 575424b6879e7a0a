"""waihu_nlu: intent classifiers for replies, registered as NLU types ``keywords`` and ``trained``.

``normalize`` makes recognised or typed text comparable; ``negation`` decides
negation scope and A-not-A questions; ``sound`` codes text by pinyin;
``matcher`` holds every rule of a script in one matcher (``literals`` tells
which patterns a reply cannot match); ``keywords`` is the
rules-only classifier; ``model`` and ``trained`` add a model trained from the
script's examples and keywords. What it is not: the routing — the dialogue
engine decides what a matched class leads to.
"""
