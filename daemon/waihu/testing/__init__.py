"""Tools for tests and the demo: synthetic callee speech and the like.

What it is not: part of the running daemon. Nothing in ``waihud`` imports this
package; it may shell out to developer tools (espeak-ng, sox).
"""
