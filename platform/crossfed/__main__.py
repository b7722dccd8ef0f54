from crossfed.cli import main

main()
