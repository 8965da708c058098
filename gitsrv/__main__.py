from gitsrv.cli import main

main()
