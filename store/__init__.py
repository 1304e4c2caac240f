"""campaign-console store: schema and every transaction that changes it.

Imports neither Textual nor APScheduler (tests/test_architecture.py holds that line).
"""
