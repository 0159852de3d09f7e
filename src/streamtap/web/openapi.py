"""The OpenAPI 3.1 description of the web app's endpoints, served at ``GET /openapi.json``.

Written by hand from :mod:`streamtap.web.app` (the app has no schema
framework); ``tests/web/test_fuzz.py`` checks that the endpoints answer as
described.
"""

from __future__ import annotations

import typing as t

__all__ = ["openapi_document"]

_ID = {"type": "string", "pattern": "^[A-Za-z0-9_\\-.:]{1,128}$"}
_ERROR = {
    "description": "A refused request; the message says what is wrong and what to do.",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_SSE = {"text/event-stream": {"schema": {"type": "string"}}}


_stop_body: dict[str, t.Any] = {
    "application/json": {
        "schema": {
            "type": "object",
            "required": ["stopped"],
            "properties": {
                "stopped": {"type": "boolean"},
                "stopping": {"type": "boolean"},
                "runId": {"type": "string"},
                "status": {"type": ["string", "null"]},
                "dismissed": {"type": "string"},
                "reason": {"type": "string"},
            },
        }
    }
}


def _errors(*codes: int) -> dict[str, t.Any]:
    return {str(c): _ERROR for c in codes}


def openapi_document(*, page: bool = True, token: bool = False) -> dict[str, t.Any]:
    """The OpenAPI document (a JSON-able dict).

    Args:
        page: the app serves the built-in page at ``/``.
        token: the app needs a bearer token on ``/api`` (declared as a security scheme).
    """
    guard = _errors(400, 401, 403, 404) if token else _errors(400, 403, 404)  # 404: a path that matches no route
    message = {
        "type": "object",
        "required": ["role"],
        "properties": {
            "id": {"type": "string", "maxLength": 128},
            "role": {"enum": ["system", "user", "assistant"]},
            "parts": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["type"],
                    "properties": {"type": {"type": "string"}, "text": {"type": "string"}},
                },
            },
            "content": {"type": "string"},
        },
    }
    chat_body = {
        "type": "object",
        "required": ["id", "messages"],
        "properties": {
            "id": _ID,
            "messages": {"type": "array", "items": message},
            "trigger": {"enum": ["submit-message", "regenerate-message"], "default": "submit-message"},
            "messageId": _ID,
            "verbose": {"type": "boolean", "default": True},
            "stream": {"type": "boolean", "default": True},
            "resume": {
                "description": "The answer to the chat's pending interrupt ({'answers': {interrupt id: answer}} for several)."
            },
        },
    }
    chat_id = {"name": "chat_id", "in": "path", "required": True, "schema": _ID}
    paths: dict[str, t.Any] = {
        "/api/chat": {
            "post": {
                "summary": "Send a message (AI SDK chat body); the answer streams as a UI message stream v1.",
                "requestBody": {"required": True, "content": {"application/json": {"schema": chat_body}}},
                "responses": {
                    "200": {
                        "description": "UI message stream: SSE `data:` frames, `data: [DONE]` last.",
                        "content": _SSE,
                    },
                    **guard,
                    **_errors(409, 413, 415, 422, 503),
                },
            }
        },
        "/api/chat/{chat_id}/stream": {
            "get": {
                "summary": "Resume the chat's running answer (full replay, then live); `?run=` replays a given run.",
                "parameters": [chat_id, {"name": "run", "in": "query", "required": False, "schema": _ID}],
                "responses": {
                    "200": {"description": "UI message stream.", "content": _SSE},
                    "204": {"description": "No run is going in this chat."},
                    **guard,
                    **_errors(404, 422),
                },
            }
        },
        "/api/chat/{chat_id}/stop": {
            "post": {
                "summary": "Stop the chat's run server-side (or dismiss its pending interrupt).",
                "parameters": [chat_id],
                "responses": {
                    "200": {
                        "description": "Whether something was stopped (the run ended, or the pending interrupt was dismissed).",
                        "content": _stop_body,
                    },
                    "202": {
                        "description": "The run was asked to stop and had not ended within the stop's wait; its stream ends when it does.",
                        "content": _stop_body,
                    },
                    **guard,
                    **_errors(415, 422),
                },
            }
        },
        "/api/runs/{run_id}/events": {
            "get": {
                "summary": "The run's streamtap events as SSE (`id:` = seq); `Last-Event-ID` or `?after=` resumes.",
                "parameters": [
                    {"name": "run_id", "in": "path", "required": True, "schema": _ID},
                    {"name": "view", "in": "query", "required": False, "schema": {"enum": ["verbose", "user"]}},
                    {"name": "after", "in": "query", "required": False, "schema": {"type": "integer"}},
                    {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "integer"}},
                ],
                "responses": {
                    "200": {"description": "Event stream.", "content": _SSE},
                    "204": {"description": "The run finished and nothing is after the given id."},
                    **guard,
                    **_errors(404, 422),
                },
            }
        },
        "/api/runs/{run_id}/ui": {
            "get": {
                "summary": "The run as a UI message stream v1 (full replay, then live): what the page's `/?run=<id>` view reads.",
                "parameters": [{"name": "run_id", "in": "path", "required": True, "schema": _ID}],
                "responses": {
                    "200": {"description": "UI message stream.", "content": _SSE},
                    **guard,
                    **_errors(404, 422),
                },
            }
        },
        "/openapi.json": {
            "get": {"summary": "This document.", "responses": {"200": {"description": "OpenAPI 3.1 JSON."}}}
        },
    }
    if page:
        paths["/"] = {
            "get": {
                "summary": "The built-in chat page.",
                "responses": {"200": {"description": "HTML.", "content": {"text/html": {}}}},
            }
        }
    doc: dict[str, t.Any] = {
        "openapi": "3.1.0",
        "info": {"title": "streamtap web app", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
            },
        },
    }
    if token:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path, item in paths.items():
            if path.startswith("/api"):
                for op in item.values():
                    op["security"] = [{"bearer": []}]
    return doc
