from vibeserve.cli import main

main()
