package cache

import (
	"container/list"
	"errors"
	"sync"
	"time"
)

// ErrNotFound is returned when a key is missing or expired.
var ErrNotFound = errors.New("cache: not found")

type entry struct {
	key     string
	value   []byte
	expires time.Time
}

// LRU is a size-bounded cache with per-entry expiry, safe for concurrent use.
type LRU struct {
	mu       sync.Mutex
	capacity int
	order    *list.List
	items    map[string]*list.Element
}

// New returns an empty cache holding at most capacity entries.
func New(capacity int) *LRU {
	return &LRU{
		capacity: capacity,
		order:    list.New(),
		items:    make(map[string]*list.Element),
	}
}

// Get returns the value stored under key.
func (c *LRU) Get(key string) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	elem, ok := c.items[key]
	if !ok {
		return nil, ErrNotFound
	}
	e := elem.Value.(*entry)
	if time.Now().After(e.expires) {
		c.removeElement(elem)
		return nil, ErrNotFound
	}
	c.order.MoveToFront(elem)
	return e.value, nil
}

// Set stores value under key for ttl.
func (c *LRU) Set(key string, value []byte, ttl time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if elem, ok := c.items[key]; ok {
		e := elem.Value.(*entry)
		e.value = value
		e.expires = time.Now().Add(ttl)
		c.order.MoveToFront(elem)
		return
	}
	elem := c.order.PushFront(&entry{key: key, value: value, expires: time.Now().Add(ttl)})
	c.items[key] = elem
	for c.order.Len() > c.capacity {
		c.removeElement(c.order.Back())
	}
}

func (c *LRU) removeElement(elem *list.Element) {
	c.order.Remove(elem)
	delete(c.items, elem.Value.(*entry).key)
}
