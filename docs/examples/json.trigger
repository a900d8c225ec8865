{
  "argv": ["python3", "-c", "import os; print('job', os.environ['SPOOLQ_JOB_ID'], os.environ['TABLE'])"],
  "lane": "default",
  "id": "sales-2026-11-27",
  "priority": 5,
  "timeout": "90s",
  "retries": 2,
  "env": {"TABLE": "sales"}
}
