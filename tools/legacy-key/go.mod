module jumpstarter-rs.local/legacy-key

go 1.24.0

require (
	filippo.io/keygen v0.0.0-20240718133620-7f162efbbd87
	github.com/golang-jwt/jwt/v5 v5.2.1
)

require (
	filippo.io/bigmod v0.0.3 // indirect
	golang.org/x/sys v0.22.0 // indirect
)
