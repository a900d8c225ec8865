from spoolq.cli import main

main()
