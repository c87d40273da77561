"""Video frames in and out with OpenCV: the RGB frames of a video file, an mp4 (``mp4v``) writer of RGB
frames, and a progress bar that shows frames per second."""

from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn
from rich.text import Text

DEFAULT_FPS = 25.0  # when the file does not say


class VideoError(OSError):
    """A video file that cannot be read, or written."""


class VideoFrames:
    """The frames of the video file at ``path`` as HxWx3 uint8 RGB arrays, in order; ``fps`` and ``count``
    as the container states them (``count`` 0 when unknown: the frames are read until the stream ends)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise VideoError(f"{self.path}: cannot be opened as a video")
        self.fps = capture.get(cv2.CAP_PROP_FPS) or DEFAULT_FPS
        self.count = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
        self._capture = capture

    def __iter__(self) -> Iterator[np.ndarray]:
        try:
            while True:
                ok, bgr = self._capture.read()
                if not ok:
                    return
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            self._capture.release()


class Mp4Writer:
    """Writes HxWx3 uint8 RGB frames to ``path`` (mp4, ``mp4v`` codec) at ``fps``; the video takes the size
    of the first frame, and every frame must have it. ``frames``: how many were written. A context
    manager: the file is complete when it exits."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = Path(path), fps
        self.frames = 0
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None

    def write(self, rgb: np.ndarray) -> None:
        """Appends one frame; raises ``VideoError`` when the file cannot be opened or the size changes."""
        size = (rgb.shape[1], rgb.shape[0])
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, size)
            if not self._writer.isOpened():
                raise VideoError(f"{self.path}: cannot be written as an mp4v video")
            self._size = size
        if size != self._size:
            raise VideoError(f"{self.path}: frame {self.frames} is {size} (w, h), the video is {self._size}")
        self._writer.write(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
        self.frames += 1

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._writer is not None:
            self._writer.release()


class FramesPerSecond(ProgressColumn):
    """The task's recent speed as ``N.N frames/s``."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:.1f} frames/s")


def frame_progress() -> Progress:
    """A progress bar of frames done (of the total, when known) and frames per second."""
    return Progress(TextColumn("frames"), BarColumn(), MofNCompleteColumn(), FramesPerSecond())
