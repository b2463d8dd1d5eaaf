from characterlab.cli import main

main()
