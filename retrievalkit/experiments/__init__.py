"""Experiments: each returns a tidy pandas DataFrame (one row per config × dataset × protocol).

``retrievalkit reproduce`` (:mod:`.reproduce`) runs them in order and writes ``results/*.csv``
and ``figures/*.png``.
"""
