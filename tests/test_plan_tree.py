"""TaskTree (paper §5.1): adding and pruning models, prefix sharing, the unshared baseline mode."""

import subprocess
import sys

import pytest

from alsatian_pl.plan import BlockSpec, TaskTree


def blocks(*names):
    return [BlockSpec(n, out_bytes=10 * i + 1, weight_bytes=i) for i, n in enumerate(names)]


B = {f"B{i}": BlockSpec(f"B{i}", out_bytes=i, weight_bytes=100 + i) for i in range(1, 13)}
M1 = [B[f"B{i}"] for i in (1, 2, 3, 4, 5, 6)]
M2 = [B[f"B{i}"] for i in (1, 2, 7, 8, 9, 10)]
M3 = [B[f"B{i}"] for i in (1, 2, 7, 8, 11, 12)]


def edges(tree):
    """{block hash: set of model ids} for every edge (hashes are unique in the figure's tree)."""
    return {n.block.hash: set(n.models) for n in tree.nodes() if n.block is not None}


def test_fig7_adding_models_shares_prefixes():
    tree = TaskTree()
    tree.add_model("M1", M1)
    tree.add_model("M2", M2)
    assert tree.num_edges() == 10
    assert edges(tree)["B1"] == edges(tree)["B2"] == {"M1", "M2"}
    before = {n.id for n in tree.nodes()}
    tree.add_model("M3", M3)
    new = [n for n in tree.nodes() if n.id not in before]
    assert [n.block.hash for n in new] == ["B11", "B12"]  # only the last two blocks create nodes
    e = edges(tree)
    assert e["B1"] == e["B2"] == {"M1", "M2", "M3"} and e["B7"] == e["B8"] == {"M2", "M3"}
    assert e["B9"] == {"M2"} and e["B11"] == {"M3"}
    assert tree.node(tree.path("M3")[-1]).ends == {"M3"}
    assert tree.models == {"M1", "M2", "M3"} and tree.node(TaskTree.ROOT).models == tree.models


def test_fig8_pruning_removes_unused_edges():
    tree = TaskTree()
    for name, m in (("M1", M1), ("M2", M2), ("M3", M3)):
        tree.add_model(name, m)
    m2_only = [tree.path("M2")[-2], tree.path("M2")[-1]]
    tree.prune(["M2"])
    e = edges(tree)
    assert tree.num_edges() == 10 and "B9" not in e and "B10" not in e
    assert e["B1"] == e["B2"] == {"M1", "M3"} and e["B7"] == e["B8"] == {"M3"}
    for node_id in m2_only:
        with pytest.raises(KeyError, match="no node"):
            tree.node(node_id)
    branch = tree.node(tree.path("M3")[3])  # B8 now has one child only
    assert [tree.node(c).block.hash for c in branch.children] == ["B11"]
    tree.prune({"M1", "M3"})
    assert tree.num_edges() == 0 and tree.models == frozenset() and tree.node(0).children == ()


def test_node_snapshot_and_helpers():
    tree = TaskTree()
    tree.add_model("a", blocks("x", "y"))
    tree.add_model("b", blocks("x", "y", "z"))  # "a" ends at an inner node
    x, y, z = (tree.node(i) for i in tree.path("b"))
    assert (x.parent, y.parent, z.parent) == (0, x.id, y.id)
    assert y.ends == {"a"} and y.children == (z.id,) and y.models == {"a", "b"}
    assert y.mem == 11 and tree.node(0).mem == 0 and tree.node(0).block is None
    assert [n.id for n in tree.nodes()] == [0, x.id, y.id, z.id]
    assert tree.distinct_blocks() == {"x", "y", "z"} and tree.total_cost() == 3.0
    assert "a" in tree and "c" not in tree


def test_unshared_tree_gives_each_model_its_own_path():
    tree = TaskTree(shared=False)
    tree.add_model("a", blocks("x", "y"))
    tree.add_model("b", blocks("x", "y"))
    tree.add_model("c", blocks("x"))
    assert tree.num_edges() == 5 and len(tree.node(0).children) == 3
    assert all(len(n.models) == 1 for n in tree.nodes() if n.block is not None)
    assert tree.distinct_blocks() == {"x", "y"}
    tree.prune(["a"])
    assert tree.num_edges() == 3


def test_errors():
    tree = TaskTree()
    tree.add_model("a", blocks("x"))
    with pytest.raises(ValueError, match="already"):
        tree.add_model("a", blocks("y"))
    with pytest.raises(ValueError, match="no blocks"):
        tree.add_model("b", [])
    with pytest.raises(ValueError, match="conflicts"):
        tree.add_model("c", [BlockSpec("x", out_bytes=999)])
    assert tree.models == {"a"} and tree.num_edges() == 1  # failed adds leave no trace
    with pytest.raises(KeyError, match="not in the task tree: 'zz'"):
        tree.prune(["a", "zz"])
    assert tree.models == {"a"}  # nothing pruned when one id is unknown
    with pytest.raises(ValueError):
        BlockSpec("x", out_bytes=-1)
    with pytest.raises(ValueError):
        BlockSpec("", out_bytes=1)


def test_identical_models_share_one_leaf_and_prune_separately():
    tree = TaskTree()
    tree.add_model("a", blocks("x", "y"))
    tree.add_model("b", blocks("x", "y"))
    assert tree.num_edges() == 2 and tree.node(tree.path("a")[-1]).ends == {"a", "b"}
    tree.prune(["a"])
    assert tree.num_edges() == 2 and tree.node(tree.path("b")[-1]).ends == {"b"}


def test_plan_package_does_not_import_torch():
    code = "import sys, alsatian_pl.plan; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
