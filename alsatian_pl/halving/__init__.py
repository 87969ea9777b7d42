"""The search: successive halving over a task-tree executor (paper §2.2, §4, Figure 6), with callbacks around it.

| module | job |
|---|---|
| ``loop`` | :class:`SuccessiveHalving`: the rounds (inputs → plan → execute → score → prune) and the hook calls |
| ``state`` | :class:`SearchState` (what a round hands on), :class:`RoundReport`, :class:`SearchResult` |
| ``callbacks`` | :class:`SearchCallback` (the hooks) and the list that calls them |
| ``budget`` | :class:`Budget`: the cache budget split between plan, weight cache, device tier and scoring |
| ``engine`` | the services one search runs on (cache service, weight cache, executor, feature cache) |
| ``reuse`` | the feature cache and the loop's reuse stage |
| ``resume`` | :class:`RoundCheckpoint` (a callback): save each round, resume from the last one saved |
| ``reports`` | each round's report and the search's result |
| ``confidence`` | the confident set, the pruned contenders and an ensemble's agreement |
| ``progress``, ``metrics``, ``monitor`` | callbacks: :class:`ProgressBar`, :class:`LogMetrics`, :class:`RoundLog`, :class:`MemoryMonitor` |
| ``strategies``, ``schedule`` | what differs between alsatian, shift and base; the halving schedule |
| ``rebalance`` | a distributed search's share per rank, and rebalancing after pruning |
"""

from .budget import Budget, in_flight_bytes
from .callbacks import CallbackList, SearchCallback
from .engine import Engine
from .loop import SuccessiveHalving, block_specs
from .metrics import LogMetrics
from .monitor import MemoryMonitor, RoundLog
from .progress import ProgressBar
from .resume import RoundCheckpoint, SearchCheckpoint
from .reuse import FeatureCache, fingerprint, items_key, verify_features
from .schedule import PAPER, Schedule
from .state import RankedModel, RoundReport, SearchResult, SearchState, TokenizerGroup, assemble_ranking
from .strategies import STRATEGIES, Strategy, get_strategy

__all__ = ["SuccessiveHalving", "SearchCallback", "CallbackList", "ProgressBar", "LogMetrics", "RoundLog", "MemoryMonitor",
           "RoundCheckpoint", "SearchCheckpoint", "SearchState", "SearchResult", "RoundReport", "RankedModel",
           "TokenizerGroup", "assemble_ranking", "block_specs", "Budget", "in_flight_bytes", "Engine",
           "FeatureCache", "fingerprint", "items_key", "verify_features", "Schedule", "PAPER", "Strategy", "STRATEGIES", "get_strategy"]
