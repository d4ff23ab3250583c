module codeactions

go 1.23
