from vibeserve.bench.cli import main

main()
