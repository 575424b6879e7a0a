"""waihu_nlu: intent classifiers for replies, registered as NLU type ``keywords``.

``normalize`` makes recognised or typed text comparable; ``keywords`` holds
the keyword/example classifier. What it is not: the routing — the dialogue
engine decides what a matched intent leads to.
"""
