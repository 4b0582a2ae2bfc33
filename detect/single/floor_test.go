package single

// nabFloor is the NAB standard score of the frozen defaults on the visible corpus, minus a margin.
const nabFloor = 0.0
