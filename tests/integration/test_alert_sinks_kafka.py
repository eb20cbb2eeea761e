"""The alert sinks against a real broker: each alert lands in the log and on the alerts topic, keyed by pair."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest

from arb.alerts import AlertSinks
from tests.conftest import consume_all
from tests.lakefixtures import BN_CB, alert

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 22, 0, 40, 34, 567000, tzinfo=UTC)


def test_alert_sinks_write_the_log_and_the_alerts_topic(kafka_topics, tmp_path):
    settings = dataclasses.replace(kafka_topics, data_dir=tmp_path)
    opened = alert("OPEN", "BTC/USD", BN_CB, T0, "12.4", "0.5", "41.2", emitted=T0)
    closed = alert("CLOSE", "BTC/USD", BN_CB, T0, "12.4", "0.5", "41.2", emitted=T0 + timedelta(seconds=2),
                   end=T0 + timedelta(seconds=2), close_reason="spread", ticks=3)

    with AlertSinks.from_settings(settings, environ={}) as sinks:
        sinks.emit(opened)
        sinks.emit(closed)

    records = consume_all(settings, settings.kafka.topics.alerts, min_count=2)
    assert [(r.key, json.loads(r.value)) for r in records] == [("BTC/USD", opened), ("BTC/USD", closed)]
    assert [json.loads(line) for line in settings.alert_log.read_text().splitlines()] == [opened, closed]
    assert [s.name for s in sinks.sinks] == ["log", "kafka"]
