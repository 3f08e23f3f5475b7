"""Database plumbing the session stores and the memory stores share.

``agentkeel.storage.sqlite``: connections with the pragmas every embedded
store wants, ``BEGIN IMMEDIATE`` write transactions, the one-thread worker and
errors that name the store and its file. ``agentkeel.storage.postgres``: the
connection pool with errors that name the store, where it is (never the
password) and the setting to change. Stores import the submodule they need.
"""
