module github.com/gouffd/uffd

go 1.26.8

require (
	github.com/prometheus/client_golang v1.25.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)
