"""The review app: people check and correct a batch's product groups in a web page
(``python -m orchestration review``; ``./dev up`` starts it beside Dagster)."""
