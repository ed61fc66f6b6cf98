"""FastAPI dependencies every router shares."""

from __future__ import annotations

from fastapi import Request

from app.api.service import AnswerService


def get_service(request: Request) -> AnswerService:
    service: AnswerService = request.app.state.service
    return service
