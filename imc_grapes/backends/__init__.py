"""Backends: the same model description built as a digital torch network, on this project's crossbar
engine, or on aihwkit (work in progress; see settings.AnalogSettings)."""
from .settings import IMPORTANCE_SOURCES, AnalogSettings

__all__ = ["AnalogSettings", "IMPORTANCE_SOURCES"]
