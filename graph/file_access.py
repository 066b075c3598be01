"""Which queries a user types would reach outside a LadybugDB database: files, extensions, settings.

``ksymgraph query`` and ``%%cypher`` run user text read-only (a read-only handle refuses writes
to the database), but LadybugDB has no setting that keeps a query away from the filesystem:
``COPY … TO`` writes a file, ``LOAD FROM`` reads one, ``LOAD EXTENSION`` loads code. So such
statements are refused by their words (:func:`file_access_in`) unless the user asks for them
(``--allow-file-access``).
"""

from __future__ import annotations

import re

from .store import cypher_code

__all__ = ["file_access_in"]


# Statements of LadybugDB's grammar (src/antlr4/Cypher.g4 of LadybugDB/ladybug) and table functions
# (CALL show_functions()) that reach outside the database: each word, with what it does.
_FILE_WORDS = {
    "COPY": "COPY ... FROM reads files and COPY ... TO writes them",
    "LOAD": "LOAD FROM reads files (anywhere in a query) and LOAD EXTENSION loads code",
    "INSTALL": "INSTALL downloads an extension", "UNINSTALL": "UNINSTALL removes an extension",
    "UPDATE": "UPDATE downloads an extension",
    "EXPORT": "EXPORT DATABASE writes a directory", "IMPORT": "IMPORT DATABASE reads a directory",
    "ATTACH": "ATTACH opens another database file",
}
# READ_CSV_SERIAL, READ_PARQUET, READ_NPY, ... read files (and crash LadybugDB 0.22.0 when CALLed).
_READ_FUNCTION = re.compile(r"READ_\w+", re.IGNORECASE)
# CALL name = value sets an option (file_search_path, home_directory: where relative paths go).
_CALL_SETTING = re.compile(r"\bCALL\s+(\w+)\s*=", re.IGNORECASE)
_WORD = re.compile(r"\w+")


def file_access_in(cypher: str) -> str | None:
    """Why ``cypher`` would read or write files or load code in LadybugDB, or None when it would not.

    Every word of the query's code counts, wherever it stands (``LOAD FROM`` is a clause that can
    follow ``MATCH``; several statements may follow one another after ``;``); words inside string
    literals and comments do not (:func:`ksymgraph.graph.store.cypher_code`). A word that is a
    property or label name is refused too when it is one of these keywords: rename it in the query.
    """
    code = cypher_code(cypher)
    for word in _WORD.findall(code):
        up = word.upper()
        if up in _FILE_WORDS:
            return f"{up}: {_FILE_WORDS[up]}"
        if _READ_FUNCTION.fullmatch(word):
            return f"{up}: a table function that reads files"
    m = _CALL_SETTING.search(code)
    if m:
        return f"CALL {m.group(1)} = ...: sets a database option (file_search_path, home_directory, ...)"
    return None
