module github.com/mosaic-kv/mosaic/bench

go 1.26.8
