"""Video jobs: POST /v1/videos queues one, a single worker thread runs them in order, and
GET /v1/videos/{id} reports queued | in_progress | completed | failed (with an error)."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lab.refserver.api import GenerationJob


@dataclass
class VideoRecord:
    id: str
    job: GenerationJob
    model: str
    created_at: int
    status: str = "queued"
    progress: int = 0
    error: str | None = None
    completed_at: int | None = None
    content: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        job = self.job
        data: dict[str, Any] = {
            "id": self.id,
            "object": "video",
            "model": self.model,
            "status": self.status,
            "progress": self.progress,
            "created_at": self.created_at,
            "completed_at": self.completed_at,
            "size": job.size_text,
            "num_frames": job.num_frames,
            "fps": job.fps,
            "seconds": f"{job.num_frames / job.fps:g}",
        }
        if self.error is not None:
            data["error"] = {"message": self.error}
        return data


class VideoQueue:
    def __init__(self, render: Callable[[VideoRecord], bytes]) -> None:
        """`render` makes the video file of a record; it raises to fail the job."""
        self._render = render
        self._records: dict[str, VideoRecord] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[VideoRecord] = queue.Queue()
        threading.Thread(target=self._work, name="videos", daemon=True).start()

    def submit(self, job: GenerationJob, model: str) -> VideoRecord:
        record = VideoRecord(f"video_{uuid.uuid4().hex}", job, model, int(time.time()))
        with self._lock:
            self._records[record.id] = record
        self._queue.put(record)
        return record

    def get(self, video_id: str) -> VideoRecord | None:
        with self._lock:
            return self._records.get(video_id)

    def _work(self) -> None:
        while True:
            record = self._queue.get()
            record.status = "in_progress"
            try:
                record.content = self._render(record)
            except Exception as e:
                record.error = f"{type(e).__name__}: {e}"
                record.status = "failed"
            else:
                record.progress = 100
                record.status = "completed"
            record.completed_at = int(time.time())
