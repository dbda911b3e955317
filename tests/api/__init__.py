"""REST API tests: the real simulator, a real SQLite store, the engine and the app served by uvicorn over HTTP."""
