"""``worker.Response``: what old ``output_fn``/``transform_fn`` implementations return.

The model server reads ``get_data()`` and ``mimetype`` from it (there is no Flask here).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["Response"]


class Response:
    def __init__(
        self,
        response: bytes | str | None = None,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        mimetype: str | None = None,
        content_type: str | None = None,
        direct_passthrough: bool = False,
    ) -> None:
        body = response if response is not None else b""
        self._data = body.encode() if isinstance(body, str) else bytes(body)
        self.status_code = status
        self.headers = dict(headers or {})
        self.mimetype = mimetype or (content_type.split(";")[0] if content_type else None)
        self.content_type = content_type or mimetype

    def get_data(self) -> bytes:
        return self._data
