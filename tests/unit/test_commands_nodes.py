"""The replies of the owner-only ``sonora-nodes`` command (the command itself runs in ``tests/e2e/test_nodes.py``)."""

from __future__ import annotations

from sonora_cog.commands_nodes import drain_summary, status_table
from sonora_cog.failover import DrainReport
from sonora_cog.node_control import DrainedNode, NodeState, NodeSummary, ProcessNode
from sonora_cog.restore import RestoreReport, RestoreStatus


def test_drain_summary_counts_the_moves_and_names_the_guilds_left() -> None:
    assert drain_summary(DrainReport("a")) == "node a: no player of this process was on it"
    report = DrainReport(
        "a",
        [RestoreReport(g, RestoreStatus.restored if g < 3 else RestoreStatus.failed) for g in range(1, 26)],
        left=list(range(3, 26)),
    )
    line = drain_summary(report)
    assert line.startswith("node a: moved 2 of 25 player(s); left on it (no other node took them): 3, 4, 5")
    assert line.endswith("22 … and 3 more")


def test_status_table_fits_a_message_and_keeps_its_code_block_whole() -> None:
    nodes = [
        NodeSummary(
            f"node`{i}",
            DrainedNode(f"node`{i}", 1.0, "cli") if i % 2 else None,
            tuple(ProcessNode(f"host:{p}", NodeState.connected, p, False) for p in range(5)),
        )
        for i in range(100)
    ]
    text = status_table(nodes, ["host:0", "host:1"])
    assert len(text) <= 2000 and text.startswith("2 process(es): host:0, host:1\n```\n")
    crowded = status_table(nodes, [f"a-host-with-a-long-name-{i}:123456" for i in range(50)])
    assert len(crowded) <= 2000 and crowded.startswith("50 process(es): a-host-with-a-long-name-0:123456, a-")
    assert text.count("```") == 2 and "more lines" in text.split("```")[-1]
    assert "node\u20350  not drained" in text and "node\u20351  drained by cli" in text
    assert status_table([NodeSummary("gone", DrainedNode("gone", 1.0, "cli"))], []) == (
        "no node view in the store\n```\ngone  drained by cli  (no running process has it)\n```"
    )
