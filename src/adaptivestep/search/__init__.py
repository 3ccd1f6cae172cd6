"""PRM-guided search: Best-of-N selection, accuracy-vs-N estimation, TVD, step-level beam search, early rejection.

One small module per strategy, each against the :class:`~adaptivestep.backends.base.Backend` and
:class:`~adaptivestep.scoring.StepScorer` Protocols (no engine is imported here):

- :mod:`.aggregate`: step scores -> one score (``min`` / ``mean`` / ``last`` / ``prod``), shared by all.
- :mod:`.common`: step texts of a response and the scorer-output check, shared by the decoding searches.
- :mod:`.bon`: pure Best-of-N selection rules (PRM argmax, majority, weighted majority, oracle).
- :mod:`.estimate`: accuracy vs N by subsampling a pool, with exact values for small pools.
- :mod:`.tvd`: token-level value-guided decoding (the paper's TVD).
- :mod:`.beam`: step-level beam search whose steps are AdaptiveStep steps.
- :mod:`.early_reject`: Best-of-N that drops weak partial candidates at checkpoints.
"""
