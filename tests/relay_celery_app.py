"""A Celery app for tests/test_relay_celery.py, run by a real ``celery worker`` process.

The broker and result backend come from ``STREAMTAP_TEST_BROKER`` (a Redis URL);
spans go over OTLP/HTTP to ``STREAMTAP_TEST_OTLP`` when it is set.
"""

from __future__ import annotations

import os
import typing as t

from celery import Celery
from celery.signals import worker_init, worker_shutdown
from relay_children import Summarise

from streamtap import propagation

app = Celery("relay_celery_app", broker=os.environ.get("STREAMTAP_TEST_BROKER"))
app.conf.update(
    result_backend=os.environ.get("STREAMTAP_TEST_BROKER"),
    task_serializer="json",  # the carried context is JSON; nothing crosses as pickle
    accept_content=["json"],
    result_serializer="json",
    broker_connection_retry_on_startup=True,
)
_export: list[t.Any] = []


@worker_init.connect
def _export_spans(**_: t.Any) -> None:
    endpoint = os.environ.get("STREAMTAP_TEST_OTLP")
    if endpoint:
        import streamtap_otlp

        _export.append(
            streamtap_otlp.configure(endpoint=endpoint, protocol="http/protobuf", metrics=False, service_name="celery")
        )


@worker_shutdown.connect
def _flush(**_: t.Any) -> None:
    for export in _export:
        export.shutdown()


@app.task(name="relay.summarise")
def summarise(carried: dict[str, t.Any], text: str) -> str:
    """Run :class:`Summarise` as a child of the run that queued the task."""
    with propagation.attach(carried):
        return t.cast(str, Summarise()(text))


@app.task(name="relay.chat")
def chat(carried: dict[str, t.Any], base_url: str, text: str) -> str:
    """Run a real OpenAI chat module (streaming over HTTP from ``base_url``) as a child of the run that queued it."""
    from streamtap.llm import OpenAIChat

    with propagation.attach(carried):
        return t.cast(str, OpenAIChat("fake-gpt", base_url=base_url, api_key="k", max_retries=0)(text))
