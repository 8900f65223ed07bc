"""qa: extractive question answering over a folder of documents."""

from .errors import QAError
from .pipeline import QA, Answer, Quote, answer

__all__ = ["QA", "Answer", "QAError", "Quote", "answer"]
__version__ = "0.1.0"
