"""The Streamlit dashboard (`ledger dashboard`). Shipped inside the wheel as `ledger.dashboard`.

`app.py` is the entry point Streamlit runs; `page_*.py` are its pages; `data.py` is the cached query layer over the
library's read API, and `views.py` holds the pure functions that shape records into tables and figures.
"""

from pathlib import Path

APP_PATH = Path(__file__).with_name("app.py")
