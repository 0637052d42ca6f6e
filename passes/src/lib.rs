//! qgc's named pass pipeline (later issues add DCE/CSE, egg phases and the memory plan).
