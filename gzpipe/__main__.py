from gzpipe.cli import main

main()
