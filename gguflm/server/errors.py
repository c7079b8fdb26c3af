"""Every error the server returns, as OpenAI's error object: {"error": {message, type, param, code}}."""

from __future__ import annotations

import re

from pydantic import ValidationError
from starlette.responses import JSONResponse

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
          405: "invalid_request_error", 413: "invalid_request_error", 503: "server_error", 500: "server_error"}
_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


class APIError(Exception):
    """An error to answer with: the HTTP status, one sentence, the request field at fault, a code."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        # a message may quote the request, and JSON's escapes can spell a lone surrogate that UTF-8 cannot hold
        message = self.message.encode("utf-8", "backslashreplace").decode("utf-8")
        return {"error": {"message": message, "type": _TYPES.get(self.status, "invalid_request_error"),
                          "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return error_response(self)


def error_response(e: APIError) -> JSONResponse:
    """The one place an error becomes an HTTP response."""
    headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
    return JSONResponse(e.body(), status_code=e.status, headers=headers)


def _field(loc: tuple) -> str | None:
    """A pydantic error location as the request field it names: messages[0].content."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[a-z_][a-z0-9_]*", part) and part not in _UNION_TAGS:
            out += f".{part}" if out else part
        else:  # a union member's tag ("list[TextPart]"): the field is named already
            break
    return out or None


def invalid_request(e: ValidationError) -> APIError:
    """A 400 naming the first invalid field, from a request body's validation error."""
    err = e.errors(include_url=False)[0]
    param, message = _field(err["loc"]), err["msg"].removeprefix("Value error, ")
    if param is None and ": " in message:  # a whole-request check names its field first
        param, message = message.split(": ", 1)
    if err["type"] == "missing":
        return APIError(400, f"'{param}' is a required field", param, "missing_field")
    return APIError(400, f"invalid '{param}': {message}", param, "invalid_value")
