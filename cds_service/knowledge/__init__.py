"""The clinical knowledge base: the files in cards/, schema-checked and cross-checked at start-up."""

from cds_service.knowledge.loader import Knowledge, KnowledgeError, load_knowledge

__all__ = ["Knowledge", "KnowledgeError", "load_knowledge"]
