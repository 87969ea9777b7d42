"""The execution planner (paper §4.3, §5): task trees, plan steps, DFS+ and data partitions. Pure Python, no torch."""

from .dfs import (RoundPlan, Requirements, StepTree, emit_steps, min_cache_requirements, plan_block_batches,
                  plan_round, simulate)
from .memory import RoundMemory
from .partition import Assignment, model_queue, partition_subtrees, rebalance, subtree_parts
from .steps import InferenceStep, ReleaseStep, ScoreStep, Step
from .tree import BlockSpec, Node, TaskTree

__all__ = ["BlockSpec", "Node", "TaskTree", "InferenceStep", "ScoreStep", "ReleaseStep", "Step", "RoundPlan",
           "Requirements", "RoundMemory", "StepTree", "emit_steps", "min_cache_requirements", "plan_round",
           "plan_block_batches", "simulate",
           "Assignment", "model_queue", "partition_subtrees", "rebalance", "subtree_parts"]
