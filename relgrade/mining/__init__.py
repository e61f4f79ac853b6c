"""Multi-channel retrieval mining and the retrieval prior (docs/mining.md).

Public API::

    from relgrade.mining import (
        Channel, LexicalChannel, DenseChannel, BehavioralChannel, ExternalChannel,
        tokenize, mine, fit_and_search, build_union, to_feature_batch,
        retrieval_prior, categorize, refine_levels, mining_report,
    )
"""
from relgrade.mining.channels import (
    BehavioralChannel,
    Channel,
    DenseChannel,
    ExternalChannel,
    LexicalChannel,
)
from relgrade.mining.prior import CATEGORIES, CHANNELS, LEVELS, categorize, refine_levels, retrieval_prior
from relgrade.mining.stage import (
    build_union,
    channel_names,
    default_snapshot,
    fit_and_search,
    make_channel,
    mine,
    write_union,
)
from relgrade.mining.tokenize import tokenize
from relgrade.mining.union import UNION_COLUMNS, to_feature_batch


def mining_report(*args, **kwargs):
    """Lazy alias of :func:`relgrade.mining.report.mining_report` (matplotlib is heavy)."""
    from relgrade.mining.report import mining_report as _r

    return _r(*args, **kwargs)


__all__ = [
    "BehavioralChannel", "CATEGORIES", "CHANNELS", "Channel", "DenseChannel", "ExternalChannel", "LEVELS",
    "LexicalChannel", "UNION_COLUMNS", "build_union", "categorize", "channel_names", "default_snapshot",
    "fit_and_search", "make_channel", "mine", "mining_report", "refine_levels", "retrieval_prior",
    "to_feature_batch", "tokenize", "union_path", "write_union",
]
