"""qa: extractive question answering over a folder of documents."""

from .errors import QAError
from .pipeline import QA, Conversation, answer
from .types import Answer, Quote

__all__ = ["QA", "Answer", "Conversation", "QAError", "Quote", "answer"]
__version__ = "0.1.0"
