{"job": "load", "params": {"table": "sales_2026_11", "path": "/data/staging/sales.csv"}}
