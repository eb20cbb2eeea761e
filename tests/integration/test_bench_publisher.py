"""`arb bench pipeline --source direct`: its publisher, a child process, sends the market on its schedule."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.conftest import consume_all

pytestmark = pytest.mark.integration


def test_the_child_publisher_sends_every_record_in_real_time_and_returns_the_market_s_truth(kafka_topics):
    from arbitrage.rules import RulesConfig
    from streaming.bench import MarketPublisher, _scenario
    from streaming.synthetic import topic_for

    rules = RulesConfig()
    topics = kafka_topics.kafka.topics
    start_us = time.time_ns() // 1000 + 5_000_000  # room for the child to start and generate
    scenario = _scenario(rules, start_us, 6.0, 300)
    records = scenario.records()

    got = MarketPublisher(rules, start_us, 6.0, 300, kafka_topics.kafka.client_config(), topics).start().result(60)

    assert got["sent"] == len(records)
    assert got["truth"] == scenario.truth(records) and len(got["truth"]) == 1
    assert got["start_late_ms"] == 0
    assert got["cpu_s"] > 0
    names = sorted({topic_for(r, topics) for r in records})
    sent = [r for name in names for r in consume_all(kafka_topics, name, min_count=1)]
    assert Counter(r.value for r in sent) == Counter(r.value.decode() for r in records)
    # In real time: no record before its time, and the broker's timestamps span what the market's times span.
    stamps = sorted(r.timestamp_ms for r in sent)
    first_ms, last_ms = min(r.t_us for r in records) // 1000, max(r.t_us for r in records) // 1000
    assert stamps[0] >= first_ms - 50
    assert abs((stamps[-1] - stamps[0]) - (last_ms - first_ms)) <= 1_000
