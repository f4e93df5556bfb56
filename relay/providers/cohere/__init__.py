"""Cohere (``{base_url}/v2/rerank``): rerank, its answers read into the Cohere/Jina
shape the ``/v1/rerank`` endpoint speaks."""

from .provider import CohereProvider

__all__ = ["CohereProvider"]
